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
//! use airmy_verify::{Answer, Error};
//! use airmy_verify_axum::AirmyRejection;
//! use axum_core::response::IntoResponse;
//!
//! let response = AirmyRejection::from(Error::SignatureMismatch).into_response();
//! assert_eq!(response.status(), 401);
//! assert_eq!(response.headers()["content-type"], "application/json");
//! ```

use std::fmt;

use airmy_verify::{Answer, Error};
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
        status_code(self.0.status())
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
    answer_response(Answer::error(err))
}

/// The response for an answer of the core: its status, JSON body, `Connection: close` where it
/// says so, and its outcome in the extensions (read by the verifying layer). The one conversion
/// of this crate.
pub(crate) fn answer_response(answer: Answer) -> http::Response<Full<Bytes>> {
    let status = status_code(answer.status());
    let close = answer.closes_connection();
    let outcome = answer.outcome();
    let mut response = http::Response::new(Full::new(answer.into_body()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(outcome) = outcome {
        response.extensions_mut().insert(outcome);
    }
    response
}

/// A core status as `http`'s (every status the core gives is valid; 500 otherwise).
pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
