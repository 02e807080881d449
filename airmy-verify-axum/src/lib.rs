//! Verify AIRMY webhooks in axum (0.8) and any tower-based server.
//!
//! - [`AirmyVerifyLayer`] / [`AirmyVerify`]: a tower layer that refuses forged, tampered,
//!   stale, oversized and stalled deliveries before any handler runs, for any
//!   `http::Request<B>`. It is the one way to verify: the extractors read what it verified.
//! - [`AirmyEvent`] / `AirmyEvent<RunCompleted>`: the verified event, whole or one type only.
//! - [`AirmyDelivery`]: the verified delivery with its raw bytes, to queue.
//! - [`AirmyIdempotencyLayer`]: runs handlers once per event id, detached from the connection.
//! - [`AirmyRejection`]: the response for a refused delivery.
//!
//! Mount the layer with `Router::route_layer` on your webhook routes: `Router::layer` also
//! wraps the router's fallback, so on a router merged into your application (or on the
//! application itself) every unknown path answers 401 `{"error":"missing_signature"}` instead
//! of 404 and is logged as a refused delivery.
//!
//! For every request the layer:
//!
//! 1. checks the `X-AIRMY-Signature` header(s) and the declared `Content-Length`, before reading
//!    any of the body (401 / 413);
//! 2. reads the body chunk by chunk into the core's [`Intake`](airmy_verify::Intake), which
//!    refuses a chunk that would pass the limit (413), within the verifier's body timeout
//!    (408 and `Connection: close`; 5 s by default);
//! 3. verifies, parses and checks freshness once (401 / 400 / 422);
//! 4. calls the inner service with the same bytes as an `http_body_util::Full` body (so
//!    `Bytes`, `String` and `Json<T>` extractors still work) and the
//!    [`Verified`](airmy_verify::Verified) delivery in the request extensions.
//!
//! A refused request never reaches the inner service: it gets the core's status, a short fixed
//! JSON body and a `tracing` event (see [`rejection`]). The response body,
//! [`ResponseBody`], implements `Default` when the inner one does, so tower-http's
//! `TimeoutLayer` and `CorsLayer` compose around the layer in one `ServiceBuilder`.
//!
//! Every rule lives in [`airmy_verify`]; this crate moves requests into it and its errors out
//! as responses (401 signature and freshness, 413 size, 400 JSON syntax, 422 not an envelope).
//!
//! # Example
//!
//! ```
//! use airmy_verify::{Event, Secret, Verifier, event::RunCompleted};
//! use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
//! use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
//! use serde_json::{Value, json};
//!
//! async fn on_event(AirmyEvent(event): AirmyEvent) -> Json<Value> {
//!     if let Event::AlertTriggered(alert) = &event.data {
//!         println!("alert {:?}: {:?}", alert.id, alert.metric_snapshot);
//!     }
//!     Json(json!({ "id": event.id, "type": event.event_type() }))
//! }
//!
//! #[derive(Clone)]
//! struct AppState {
//!     region: &'static str,
//! }
//!
//! async fn on_run(State(state): State<AppState>, AirmyEvent(run): AirmyEvent<RunCompleted>) -> StatusCode {
//!     println!("{}: run {:?} took {:?} ms", state.region, run.data.id, run.data.latency_ms);
//!     StatusCode::OK
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder(Secret::new("whsec_current")?)
//!     .previous_secret(Secret::new("whsec_previous")?)
//!     .build();
//! let app: Router = Router::new()
//!     .route("/hooks/airmy", post(on_event))
//!     .route("/hooks/airmy/runs", post(on_run))
//!     .route_layer(AirmyVerifyLayer::new(verifier)) // the routes above; other paths keep their 404
//!     .with_state(AppState { region: "eu-west-1" });
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod body;
#[cfg(feature = "console")]
#[cfg_attr(docsrs, doc(cfg(feature = "console")))]
pub mod console;
pub mod extract;
mod future;
pub mod idempotency;
#[cfg(feature = "inbox")]
#[cfg_attr(docsrs, doc(cfg(feature = "inbox")))]
pub mod inbox;
mod layer;
pub mod rejection;
mod service;

pub use body::ResponseBody;
pub use extract::{AirmyDelivery, AirmyEvent};
pub use future::ResponseFuture;
pub use idempotency::{AirmyIdempotency, AirmyIdempotencyLayer, IdempotencyFuture};
pub use layer::AirmyVerifyLayer;
pub use rejection::AirmyRejection;
pub use service::AirmyVerify;
