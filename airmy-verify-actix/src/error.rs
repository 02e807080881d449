//! Why an extractor or the middleware refused a request, as an actix-web error.
//!
//! Every verification failure comes from the core as an [`airmy_verify::Error`]: its status
//! (401, 413, 400 or 422), fixed JSON body and `tracing` event (target `airmy_verify`, `WARN`)
//! are the core's, 500 for a route no verifier covers included. The one failure of this
//! crate's own is, without the middleware, a body another extractor read first: 500, logged at
//! `ERROR`. The body never reaches the handler.
//!
//! # Example
//!
//! ```
//! use actix_web::ResponseError;
//! use airmy_verify::{Answer, Bytes, Error};
//! use airmy_verify_actix::AirmyError;
//!
//! let err = AirmyError::from(Error::MissingSignature);
//! assert_eq!(err.status_code().as_u16(), 401);
//! ```

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use airmy_verify::{Answer, Bytes, Error};

/// A request refused by an extractor or by [`AirmyVerify`](crate::AirmyVerify).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AirmyError {
    /// The delivery failed a check of the core (see [`airmy_verify::error`]), or no verifier
    /// covers the route ([`Error::NotConfigured`], 500).
    Verify(Error),
    /// Without the middleware, another extractor (`web::Bytes`, `String`, `web::Json`, …)
    /// read the body before ours could verify it: make ours the handler's only body
    /// extractors, or use the [`AirmyVerify`](crate::AirmyVerify) middleware. 500,
    /// `{"error":"body_already_read"}`.
    BodyAlreadyRead,
}

impl From<Error> for AirmyError {
    fn from(err: Error) -> Self {
        Self::Verify(err)
    }
}

impl fmt::Display for AirmyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Verify(err) => err.fmt(f),
            Self::BodyAlreadyRead => f.write_str(
                "another extractor read the body before the AIRMY extractor could verify it",
            ),
        }
    }
}

impl std::error::Error for AirmyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Verify(err) => Some(err),
            Self::BodyAlreadyRead => None,
        }
    }
}

impl ResponseError for AirmyError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Verify(err) => status_code(err.status()),
            Self::BodyAlreadyRead => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Verify(err) => {
                err.log();
                answer_response(Answer::error(err))
            }
            Self::BodyAlreadyRead => {
                tracing::error!(
                    target: "airmy_verify",
                    status = 500,
                    code = "body_already_read",
                    "another extractor (web::Bytes, String, web::Json, ...) read the body before \
                     the AIRMY extractor: without the AirmyVerify middleware the AIRMY \
                     extractors must be the handler's only body extractors (AirmyDelivery has \
                     the raw bytes); refusing the delivery"
                );
                answer_response(Answer::new(
                    500,
                    Bytes::from_static(br#"{"error":"body_already_read"}"#),
                    None,
                ))
            }
        }
    }
}

/// The response for an answer of the core: its status, JSON body, `Connection: close` where it
/// says so (a stalled body is not waited for on this connection), and its outcome in the
/// extensions (read by the verifying middleware). The one conversion of this crate.
pub(crate) fn answer_response(answer: Answer) -> HttpResponse {
    let mut response = HttpResponse::build(status_code(answer.status()));
    response.insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    if answer.closes_connection() {
        response.force_close();
    }
    if let Some(outcome) = answer.outcome() {
        response.extensions_mut().insert(outcome);
    }
    response.body(answer.into_body())
}

/// A core status as actix-web's (every status the core gives is valid; 500 otherwise).
pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
