//! A middleware that refuses forged, tampered, stale and oversized AIRMY deliveries before any
//! handler of an `App` or `scope` runs.
//!
//! [`AirmyVerify`] reads the body (refusing an over-limit `Content-Length` before reading, and
//! enforcing the limit while it streams), verifies, parses and checks freshness once with
//! [`Verifier::verify`], then puts the same bytes back as the request payload and the
//! [`Verified`] delivery in the request extensions, where the
//! [extractors](crate::extract) find it. A refused request gets the core's status, a short
//! JSON body and a `tracing` event, and no handler runs.
//!
//! # Example
//!
//! ```
//! use actix_web::{App, HttpResponse, web};
//! use airmy_verify::{Secret, Verifier};
//! use airmy_verify_actix::{AirmyEvent, AirmyVerify};
//!
//! async fn on_event(AirmyEvent(event): AirmyEvent) -> HttpResponse {
//!     HttpResponse::Ok().body(event.id)
//! }
//!
//! # fn main() -> Result<(), airmy_verify::InvalidSecret> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let app = App::new().service(
//!     web::scope("/hooks")
//!         .wrap(AirmyVerify::new(verifier))
//!         .route("/airmy", web::post().to(on_event)),
//! );
//! # Ok(())
//! # }
//! ```

use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use airmy_verify::idempotency::{Guarded, Idempotency};
use airmy_verify::{Verified, Verifier};
use futures_util::future::{LocalBoxFuture, Ready, ready};
use futures_util::{Stream, stream};

use crate::error::AirmyError;
use crate::extract::read_delivery;

/// The middleware's configuration (a [`Verifier`]); wrap an `App` or `scope` with it.
///
/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyVerify {
    verifier: Verifier,
    idempotency: Option<Idempotency>,
}

impl AirmyVerify {
    /// A middleware checking deliveries with `verifier`.
    #[must_use]
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            idempotency: None,
        }
    }

    /// Runs the handler once per verified event id, with `guard` (see
    /// [`airmy_verify::idempotency`]): a committed id answers 200 `{"status":"duplicate",…}`,
    /// an id in flight 409, and a non-2xx answer, error or panic of the handler releases the
    /// claim so AIRMY's retry runs it again. Defaults to off.
    #[must_use]
    pub fn idempotency(mut self, guard: Idempotency) -> Self {
        self.idempotency = Some(guard);
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for AirmyVerify
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = AirmyVerifyMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AirmyVerifyMiddleware {
            service: Rc::new(service),
            verifier: self.verifier.clone(),
            idempotency: self.idempotency.clone(),
        }))
    }
}

/// The service [`AirmyVerify`] wraps around the inner one.
#[derive(Debug)]
pub struct AirmyVerifyMiddleware<S> {
    service: Rc<S>,
    verifier: Verifier,
    idempotency: Option<Idempotency>,
}

impl<S, B> Service<ServiceRequest> for AirmyVerifyMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let verifier = self.verifier.clone();
        let idempotency = self.idempotency.clone();
        Box::pin(async move {
            let mut payload = req.take_payload();
            let verified = match read_delivery(&verifier, req.headers(), &mut payload).await {
                Ok((signature, bytes)) => verifier.verify(&signature, bytes),
                Err(err) => Err(err),
            };
            let verified = match verified {
                Ok(verified) => verified,
                Err(err) => {
                    let response = AirmyError::from(err).error_response();
                    return Ok(req.into_response(response).map_into_right_body());
                }
            };
            tracing::debug!(
                target: "airmy_verify",
                event_id = %verified.envelope.id,
                event_type = verified.envelope.event_type(),
                "AIRMY webhook delivery verified"
            );
            let event_id = idempotency.as_ref().map(|_| verified.envelope.id.clone());
            // The same bytes, as a one-item stream (a single allocation).
            let bytes: Result<_, PayloadError> = Ok(verified.bytes.clone());
            let stream: Pin<Box<dyn Stream<Item = _>>> = Box::pin(stream::once(ready(bytes)));
            req.set_payload(Payload::from(stream));
            req.extensions_mut().insert::<Verified>(verified);
            match idempotency.zip(event_id) {
                None => Ok(service.call(req).await?.map_into_left_body()),
                // Boxed on its own, so that the common path's future stays small.
                Some((guard, event_id)) => guarded(guard, event_id, service, req).await,
            }
        })
    }
}

/// Runs the inner service under the idempotency guard (see [`Idempotency::run`]).
fn guarded<S, B>(
    guard: Idempotency,
    event_id: String,
    service: Rc<S>,
    req: ServiceRequest,
) -> LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    Box::pin(async move {
        let success = |r: &ServiceResponse<B>| r.status().is_success();
        let call = |req| service.call(req);
        match guard.run(&event_id, req, call, success).await {
            Guarded::Ran(response) => Ok(response?.map_into_left_body()),
            Guarded::Answered {
                status,
                body,
                input,
            } => {
                let response = guard_response(status, body);
                Ok(input.into_response(response).map_into_right_body())
            }
        }
    })
}

/// The response for an idempotency decision that does not run the handler, with the core's
/// status and body (200 duplicate, 409 in flight, 503 store unavailable).
fn guard_response(status: u16, body: String) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(body)
}
