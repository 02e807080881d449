//! The example receivers' apps, shared by the receiver binaries and the demo so that the demo
//! exercises exactly what the receivers serve: `POST /hooks/airmy` answering an accepted event
//! with 200 and `{"id":"<event id>","type":"<event type>"}`.
//!
//! Each completed handling prints `handled <id> <type>` on standard output (one line, flushed),
//! after the configured handler delay: black-box tests count these lines.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airmy_verify::idempotency::Idempotency;
use airmy_verify::{Envelope, Event, Verifier};
use serde_json::{Value, json};

/// The path the receivers serve.
pub const PATH: &str = "/hooks/airmy";

/// What a receiver's handler does with an event: wait `delay` (a slow handler, from
/// `AIRMY_HANDLER_DELAY_MS`), count it, log it, and print the `handled` line.
#[derive(Debug, Clone, Default)]
pub struct Handling {
    /// How many handlings completed (the demo reads it; the binaries ignore it).
    pub completed: Arc<AtomicUsize>,
    /// How long each handling takes.
    pub delay: Duration,
    /// Whether to print `handled <id> <type>` on standard output (the receivers do; the demo,
    /// which prints a table of its own, does not).
    pub print: bool,
}

impl Handling {
    /// A handling that takes `delay` and prints its `handled` lines.
    #[must_use]
    pub fn printing(delay: Duration) -> Self {
        Self {
            completed: Arc::default(),
            delay,
            print: true,
        }
    }

    async fn handle(&self, receiver: &'static str, event: &Envelope<Event>) -> Value {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            target: "airmy_receiver",
            receiver,
            event_id = %event.id,
            event_type = event.event_type(),
            created_at = %event.created_at,
            "event handled"
        );
        if self.print {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the receiver.
            let _ = writeln!(out, "handled {} {}", event.id, event.event_type());
            let _ = out.flush();
        }
        json!({ "id": event.id, "type": event.event_type() })
    }
}

/// The axum receiver: the route behind `AirmyVerifyLayer` (and `AirmyIdempotencyLayer`
/// inside it, if a guard is given), the handler taking `AirmyEvent`.
pub fn axum_app(
    verifier: Verifier,
    handling: Handling,
    idempotency: Option<Idempotency>,
) -> axum::Router {
    use airmy_verify_axum::{AirmyEvent, AirmyIdempotencyLayer, AirmyVerifyLayer};
    use axum::routing::post;

    let handler = move |AirmyEvent(event): AirmyEvent| {
        let handling = handling.clone();
        async move { axum::Json(handling.handle("axum", &event).await) }
    };
    let mut router = axum::Router::new().route(PATH, post(handler));
    if let Some(guard) = idempotency {
        router = router.layer(AirmyIdempotencyLayer::new(guard));
    }
    router.layer(AirmyVerifyLayer::new(verifier))
}

/// The actix receiver: a `/hooks` scope wrapped in `AirmyVerify` (and `AirmyIdempotency`
/// inside it, if a guard is given), the handler taking `AirmyEvent`. Use with
/// `App::new().configure(actix_app(verifier, handling, guard))`.
pub fn actix_app(
    verifier: Verifier,
    handling: Handling,
    idempotency: Option<Idempotency>,
) -> impl Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static {
    use actix_web::{HttpResponse, web};
    use airmy_verify_actix::{AirmyEvent, AirmyIdempotency, AirmyVerify};

    move |config: &mut web::ServiceConfig| {
        let handling = handling.clone();
        let handler = move |AirmyEvent(event): AirmyEvent| {
            let handling = handling.clone();
            async move { HttpResponse::Ok().json(handling.handle("actix", &event).await) }
        };
        let route = web::post().to(handler);
        let verify = AirmyVerify::new(verifier.clone());
        match &idempotency {
            Some(guard) => config.service(
                web::scope("/hooks")
                    .wrap(AirmyIdempotency::new(guard.clone()))
                    .wrap(verify)
                    .route("/airmy", route),
            ),
            None => config.service(web::scope("/hooks").wrap(verify).route("/airmy", route)),
        };
    }
}
