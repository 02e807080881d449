//! An AIRMY webhook receiver on axum: `POST /hooks/airmy` behind `AirmyVerifyLayer`.
//!
//! ```text
//! AIRMY_WEBHOOK_SECRET=whsec_... cargo run --release -p examples --bin axum-receiver
//! ```
//!
//! Configuration is in the `examples` crate docs (`AIRMY_WEBHOOK_SECRET`,
//! `AIRMY_WEBHOOK_SECRET_PREVIOUS`, `AIRMY_LISTEN`, `AIRMY_TOLERANCE_SECS`). Prints
//! `listening on http://HOST:PORT` when ready; answers an accepted event with 200 and
//! `{"id":"<event id>","type":"<event type>"}`, a refused one with the core's status and body.

use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

async fn on_event(AirmyEvent(event): AirmyEvent) -> Json<Value> {
    tracing::info!(
        target: "axum_receiver",
        event_id = %event.id,
        event_type = event.event_type(),
        created_at = %event.created_at,
        "event accepted"
    );
    Json(json!({ "id": event.id, "type": event.event_type() }))
}

#[tokio::main]
async fn main() {
    let config = examples::config_or_exit();
    examples::init_logging();
    let app = Router::new()
        .route("/hooks/airmy", post(on_event))
        .layer(AirmyVerifyLayer::new(config.verifier));
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            std::process::exit(examples::EXIT_CONFIG);
        }
    };
    match listener.local_addr() {
        Ok(addr) => examples::announce(addr),
        Err(err) => {
            eprintln!("error: no local address: {err}");
            std::process::exit(1);
        }
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("error: server failed: {err}");
        std::process::exit(1);
    }
}
