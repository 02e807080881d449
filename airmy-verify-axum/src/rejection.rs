//! Why the layer or an extractor refused a request, as an HTTP response.
//!
//! Every verification failure comes from the core as an [`airmy_verify::Error`]: its status
//! (401, 413, 400 or 422), its fixed JSON body and its `tracing` event (target `airmy_verify`,
//! level `WARN`) are the core's. The only rejection of this crate's own is a route with no
//! verifier at all, which answers 500 and logs at `ERROR`: an unverified body never reaches a
//! handler.
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

const NOT_CONFIGURED_BODY: &str = r#"{"error":"verifier_not_configured"}"#;

/// A request refused by [`AirmyVerifyLayer`](crate::AirmyVerifyLayer) or an extractor.
#[derive(Debug)]
#[non_exhaustive]
pub enum AirmyRejection {
    /// The delivery failed a check of the core (see [`airmy_verify::error`]).
    Verify(Error),
    /// An extractor or the [`AirmyIdempotencyLayer`](crate::AirmyIdempotencyLayer) ran on a
    /// request no [`AirmyVerifyLayer`](crate::AirmyVerifyLayer) verified: 500,
    /// `{"error":"verifier_not_configured"}`.
    NotConfigured,
}

impl AirmyRejection {
    /// The HTTP status of the response.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Verify(err) => status_of(err),
            Self::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for AirmyRejection {
    fn from(err: Error) -> Self {
        Self::Verify(err)
    }
}

impl fmt::Display for AirmyRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Verify(err) => err.fmt(f),
            Self::NotConfigured => f.write_str("no AirmyVerifyLayer in front of this route"),
        }
    }
}

impl std::error::Error for AirmyRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Verify(err) => Some(err),
            Self::NotConfigured => None,
        }
    }
}

impl IntoResponse for AirmyRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Verify(err) => error_response(&err).map(Body::new),
            Self::NotConfigured => not_configured_response().map(Body::new),
        }
    }
}

impl AirmyRejection {
    fn log(&self) {
        match self {
            Self::Verify(err) => err.log(),
            Self::NotConfigured => {
                tracing::error!(
                    target: "airmy_verify",
                    status = 500,
                    code = "verifier_not_configured",
                    "an AIRMY extractor or idempotency layer ran on a request that no \
                     AirmyVerifyLayer verified (add the layer in front of this route, with \
                     Router::layer or route_layer); refusing the delivery"
                );
            }
        }
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

/// The response for an extractor or layer that found no verified delivery.
pub(crate) fn not_configured_response() -> http::Response<Full<Bytes>> {
    AirmyRejection::NotConfigured.log();
    json(StatusCode::INTERNAL_SERVER_ERROR, NOT_CONFIGURED_BODY)
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
