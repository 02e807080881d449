//! Verify AIRMY webhooks in actix-web 4.
//!
//! - [`AirmyEvent`] / `AirmyEvent<RunCompleted>`: extractors for the verified event, whole or
//!   one type only, verifying with the [`Verifier`](airmy_verify::Verifier) in `app_data`.
//! - [`AirmyDelivery`]: the verified delivery with its raw bytes, to queue.
//! - [`AirmyVerify`]: a middleware for the webhook `scope` (or `resource`) that refuses bad
//!   deliveries before any handler runs; extractors behind it neither hash nor parse again, and any mix of them
//!   with actix's own works in one handler.
//! - [`AirmyIdempotency`]: runs handlers once per event id, detached from the connection.
//! - [`AirmyError`]: the `ResponseError` for a refused delivery.
//!
//! Wrap the webhook scope or resource, not the `App`: `App::wrap` also wraps the default
//! service, so every unknown path of the application would answer 401
//! `{"error":"missing_signature"}` instead of 404 and be logged as a refused delivery.
//!
//! Every rule lives in [`airmy_verify`]; this crate moves requests into it and its errors out
//! as responses (401 signature and freshness, 413 size, 408 a body that stalls, 400 JSON syntax, 422 not an
//! envelope).
//! The core knows nothing of `http` 0.2, which actix-web 4 uses.
//!
//! # Example
//!
//! ```
//! use actix_web::{App, HttpResponse, web};
//! use airmy_verify::{Event, Secret, Verifier, event::RunCompleted};
//! use airmy_verify_actix::{AirmyEvent, AirmyVerify};
//!
//! async fn on_event(AirmyEvent(event): AirmyEvent) -> HttpResponse {
//!     HttpResponse::Ok().json(serde_json::json!({ "id": event.id, "type": event.event_type() }))
//! }
//!
//! async fn on_run(AirmyEvent(run): AirmyEvent<RunCompleted>) -> HttpResponse {
//!     HttpResponse::Ok().body(format!("{:?} ms", run.data.latency_ms))
//! }
//!
//! # fn main() -> Result<(), airmy_verify::InvalidSecret> {
//! let verifier = Verifier::builder(Secret::new("whsec_current")?)
//!     .previous_secret(Secret::new("whsec_previous")?)
//!     .build();
//! // Extractors alone, verifier in app_data:
//! let app = App::new()
//!     .app_data(verifier.clone())
//!     .service(web::resource("/hooks/airmy").route(web::post().to(on_event)));
//! // Or the middleware for a whole scope:
//! let app = App::new().service(
//!     web::scope("/hooks")
//!         .wrap(AirmyVerify::new(verifier))
//!         .route("/airmy", web::post().to(on_event))
//!         .route("/airmy/runs", web::post().to(on_run)),
//! );
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod config;
#[cfg(feature = "console")]
#[cfg_attr(docsrs, doc(cfg(feature = "console")))]
pub mod console;
pub mod error;
pub mod extract;
pub mod idempotency;
#[cfg(feature = "inbox")]
#[cfg_attr(docsrs, doc(cfg(feature = "inbox")))]
pub mod inbox;
pub mod middleware;

pub use error::AirmyError;
pub use extract::{AirmyDelivery, AirmyEvent};
pub use idempotency::{AirmyIdempotency, AirmyIdempotencyMiddleware};
pub use middleware::{AirmyVerify, AirmyVerifyMiddleware, ResponseFuture};
