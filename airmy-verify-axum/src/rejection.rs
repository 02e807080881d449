//! Why the layer or an extractor refused a request, as an HTTP response.
//!
//! Every refusal comes from the core as an [`airmy_verify::Error`]: its status (401, 413, 408,
//! 400, 422, or 500 for a route no layer verified), its fixed JSON body and its `tracing` event
//! (target `airmy_verify`) are the core's; this crate only turns them into responses. An
//! unverified body never reaches a handler.
//!
//! # Example
//!
//! ```
//! use airmy_verify::Error;
//! use airmy_verify_axum::AirmyRejection;
//! use axum_core::response::IntoResponse;
//!
//! let response = AirmyRejection::from(Error::SignatureMismatch).into_response();
//! assert_eq!(response.status(), 401);
//! assert_eq!(response.headers()["content-type"], "application/json");
//! ```

use std::fmt;

use airmy_verify::Error;
use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;

/// A request refused by [`AirmyVerifyLayer`](crate::AirmyVerifyLayer), an extractor or the
/// [`AirmyIdempotencyLayer`](crate::AirmyIdempotencyLayer): the core's [`Error`].
#[derive(Debug)]
pub struct AirmyRejection(pub Error);

impl AirmyRejection {
    /// The HTTP status of the response.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        status_of(&self.0)
    }
}

impl From<Error> for AirmyRejection {
    fn from(err: Error) -> Self {
        Self(err)
    }
}

impl fmt::Display for AirmyRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for AirmyRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl IntoResponse for AirmyRejection {
    fn into_response(self) -> Response {
        error_response(&self.0).map(Body::new)
    }
}

/// The response for a core error: logs it, answers its status and fixed body (and closes the
/// connection of a body that did not arrive in time).
pub(crate) fn error_response(err: &Error) -> http::Response<Full<Bytes>> {
    err.log();
    let mut response = json(status_of(err), err.body());
    if matches!(err, Error::BodyTimeout) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The response for an idempotency decision that does not run the handler, with the core's
/// status and body (200 duplicate, 409 in flight, 503 store unavailable).
pub(crate) fn guard_response(status: u16, body: String) -> http::Response<Full<Bytes>> {
    json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

fn status_of(err: &Error) -> StatusCode {
    StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
