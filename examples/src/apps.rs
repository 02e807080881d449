//! The example receivers' apps, shared by the receiver binaries and the demo so that the demo
//! exercises exactly what the receivers serve: `POST /hooks/airmy` answering an accepted event
//! with 200 and `{"id":"<event id>","type":"<event type>"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use airmy_verify::idempotency::Idempotency;
use airmy_verify::{Envelope, Event, Verifier};
use serde_json::{Value, json};

/// Counts the events a receiver's handler accepted (the demo reads it; the binaries ignore it).
pub type Accepted = Arc<AtomicUsize>;

/// The path the receivers serve.
pub const PATH: &str = "/hooks/airmy";

fn accept(receiver: &'static str, accepted: &Accepted, event: &Envelope<Event>) -> Value {
    accepted.fetch_add(1, Ordering::SeqCst);
    tracing::info!(
        target: "airmy_receiver",
        receiver,
        event_id = %event.id,
        event_type = event.event_type(),
        created_at = %event.created_at,
        "event accepted"
    );
    json!({ "id": event.id, "type": event.event_type() })
}

/// The axum receiver: the route behind `AirmyVerifyLayer` (with the idempotency guard, if
/// any), the handler taking `AirmyEvent`.
pub fn axum_app(
    verifier: Verifier,
    accepted: Accepted,
    idempotency: Option<Idempotency>,
) -> axum::Router {
    use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
    use axum::routing::post;

    let handler = move |AirmyEvent(event): AirmyEvent| {
        let accepted = accepted.clone();
        async move { axum::Json(accept("axum", &accepted, &event)) }
    };
    let mut layer = AirmyVerifyLayer::new(verifier);
    if let Some(guard) = idempotency {
        layer = layer.idempotency(guard);
    }
    axum::Router::new().route(PATH, post(handler)).layer(layer)
}

/// The actix receiver: a `/hooks` scope wrapped in `AirmyVerify` (with the idempotency guard,
/// if any), the handler taking `AirmyEvent`. Use with
/// `App::new().configure(actix_app(verifier, accepted, guard))`.
pub fn actix_app(
    verifier: Verifier,
    accepted: Accepted,
    idempotency: Option<Idempotency>,
) -> impl Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static {
    use actix_web::{HttpResponse, web};
    use airmy_verify_actix::{AirmyEvent, AirmyVerify};

    move |config: &mut web::ServiceConfig| {
        let accepted = accepted.clone();
        let handler = move |AirmyEvent(event): AirmyEvent| {
            let accepted = accepted.clone();
            async move { HttpResponse::Ok().json(accept("actix", &accepted, &event)) }
        };
        let mut middleware = AirmyVerify::new(verifier.clone());
        if let Some(guard) = &idempotency {
            middleware = middleware.idempotency(guard.clone());
        }
        config.service(
            web::scope("/hooks")
                .wrap(middleware)
                .route("/airmy", web::post().to(handler)),
        );
    }
}
