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
//! use airmy_verify::Error;
//! use airmy_verify_actix::AirmyError;
//!
//! let err = AirmyError::from(Error::MissingSignature);
//! assert_eq!(err.status_code().as_u16(), 401);
//! ```

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use airmy_verify::Error;

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
            Self::Verify(err) => {
                StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::BodyAlreadyRead => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            Self::Verify(err) => {
                err.log();
                err.body()
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
                r#"{"error":"body_already_read"}"#
            }
        };
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        if matches!(self, Self::Verify(Error::BodyTimeout)) {
            // A stalled body: do not wait for the rest of it on this connection.
            response.force_close();
        }
        response.body(body)
    }
}
