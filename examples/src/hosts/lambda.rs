//! The verify layer in an AWS Lambda function: `AirmyVerifyLayer` around the typed handler,
//! run by `lambda_http`, behind a function URL or API Gateway (REST, v1, or HTTP, v2).
//!
//! `lambda_http` turns each event into an `http::Request<lambda_http::Body>`: the headers as
//! a `HeaderMap` (so `X-AIRMY-Signature` matches in any case, from `headers` or
//! `multiValueHeaders`), and the body as text, or, when the event says `isBase64Encoded`
//! (API Gateway does for binary media types, function URLs for non-text content types),
//! decoded into the bytes the sender signed. The layer reads that body like any other: the
//! HMAC is checked over exactly those bytes, the size limit (413) applies to them, and the
//! answer goes back as the event's response (text for JSON, so a refusal reads
//! `{"error":"invalid_signature"}` in the gateway).
//!
//! ```no_run
//! use airmy_verify::{Secret, Verifier};
//! use examples::apps::Handling;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), lambda_http::Error> {
//!     let verifier = Verifier::new(Secret::new(std::env::var("AIRMY_WEBHOOK_SECRET")?)?);
//!     examples::hosts::lambda::run(verifier, Handling::default()).await
//! }
//! ```

use airmy_verify::Verifier;
use airmy_verify_axum::AirmyVerifyLayer;
use tower::ServiceBuilder;

use crate::apps::Handling;

/// Runs the function: each invocation's request through `AirmyVerifyLayer` (with `verifier`)
/// to [`handler`](super::handler) (with `handling`), until the Lambda runtime stops it.
///
/// # Errors
///
/// The runtime's, when the Lambda runtime API cannot be reached (outside Lambda or an
/// emulator: `AWS_LAMBDA_RUNTIME_API` is not set).
pub async fn run(verifier: Verifier, handling: Handling) -> Result<(), lambda_http::Error> {
    let service = ServiceBuilder::new()
        .layer(AirmyVerifyLayer::new(verifier))
        .service(super::handler(handling, "lambda"));
    lambda_http::run(service).await
}
