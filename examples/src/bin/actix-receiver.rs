//! An AIRMY webhook receiver on actix-web: `POST /hooks/airmy` behind the `AirmyVerify`
//! middleware.
//!
//! ```text
//! AIRMY_WEBHOOK_SECRET=whsec_... cargo run --release -p examples --bin actix-receiver
//! ```
//!
//! The same contract as `axum-receiver`: configuration from `AIRMY_WEBHOOK_SECRET`,
//! `AIRMY_WEBHOOK_SECRET_PREVIOUS`, `AIRMY_LISTEN` and `AIRMY_TOLERANCE_SECS`; prints
//! `listening on http://HOST:PORT` when ready; answers an accepted event with 200 and
//! `{"id":"<event id>","type":"<event type>"}`, a refused one with the core's status and body.

use actix_web::{App, HttpResponse, HttpServer, web};
use airmy_verify_actix::{AirmyEvent, AirmyVerify};
use serde_json::json;

async fn on_event(AirmyEvent(event): AirmyEvent) -> HttpResponse {
    tracing::info!(
        target: "actix_receiver",
        event_id = %event.id,
        event_type = event.event_type(),
        created_at = %event.created_at,
        "event accepted"
    );
    HttpResponse::Ok().json(json!({ "id": event.id, "type": event.event_type() }))
}

#[actix_web::main]
async fn main() {
    let config = examples::config_or_exit();
    examples::init_logging();
    let verifier = config.verifier;
    let server = HttpServer::new(move || {
        App::new().service(
            web::scope("/hooks")
                .wrap(AirmyVerify::new(verifier.clone()))
                .route("/airmy", web::post().to(on_event)),
        )
    })
    .workers(2);
    let server = match server.bind(&config.listen) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            std::process::exit(examples::EXIT_CONFIG);
        }
    };
    for addr in server.addrs() {
        examples::announce(addr);
    }
    if let Err(err) = server.run().await {
        eprintln!("error: server failed: {err}");
        std::process::exit(1);
    }
}
