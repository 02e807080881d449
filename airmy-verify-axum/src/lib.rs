//! Verify AIRMY webhooks in axum (0.8) and any tower-based server.
//!
//! - [`AirmyVerifyLayer`]: a tower layer that refuses forged, tampered, stale and oversized
//!   deliveries before any handler runs, for any `http::Request<B>`.
//! - [`AirmyEvent`] / `AirmyEvent<RunCompleted>`: the verified event, whole or one type only.
//! - [`VerifiedBytes`]: the raw verified payload, to queue.
//! - [`AirmyRejection`]: the response for a refused delivery.
//!
//! Every rule lives in [`airmy_verify`]; this crate moves requests into it and its errors out
//! as responses (401 signature and freshness, 413 size, 400 JSON syntax, 422 not an envelope).
//!
//! # Example
//!
//! ```
//! use airmy_verify::{Event, Secret, Verifier, event::RunCompleted};
//! use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
//! use axum::{Json, Router, http::StatusCode, routing::post};
//! use serde_json::{Value, json};
//!
//! async fn on_event(AirmyEvent(event): AirmyEvent) -> Json<Value> {
//!     if let Event::AlertTriggered(alert) = &event.data {
//!         println!("alert {:?}: {:?}", alert.id, alert.metric_snapshot);
//!     }
//!     Json(json!({ "id": event.id, "type": event.event_type() }))
//! }
//!
//! async fn on_run(AirmyEvent(run): AirmyEvent<RunCompleted>) -> StatusCode {
//!     println!("run {:?} took {:?} ms", run.data.id, run.data.latency_ms);
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
//!     .layer(AirmyVerifyLayer::new(verifier));
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod extract;
pub mod layer;
pub mod rejection;

pub use extract::{AirmyEvent, AirmyVerifier, VerifiedBytes};
pub use layer::{AirmyVerify, AirmyVerifyLayer, ResponseBody, ResponseFuture};
pub use rejection::AirmyRejection;
