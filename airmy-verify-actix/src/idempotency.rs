//! [`AirmyIdempotency`]: runs the handler once per verified event id.
//!
//! It reads the event id from the delivery the [`AirmyVerify`](crate::AirmyVerify) middleware
//! verified, so it goes **inside** it; actix runs the last `wrap` first:
//! `.wrap(AirmyIdempotency::new(guard)).wrap(AirmyVerify::new(verifier))`. A request no
//! verifying middleware saw is answered 500 `{"error":"verifier_not_configured"}` (fail
//! closed). Decisions and responses are the core's ([`airmy_verify::idempotency`]): 200
//! `{"status":"duplicate",…}`, 409 in flight, 503 when the store is down under
//! `OnStoreError::Refuse`.
//!
//! **The handler runs detached from the connection**, as a task of its own on the worker
//! (`actix_web::rt::spawn`): when AIRMY hangs up at its 10 s timeout or the server shuts down,
//! the handler still runs to completion and its outcome is committed, so AIRMY's next retry
//! gets `200 duplicate`. Wait for such handlers at shutdown with
//! [`Idempotency::wait_idle`].
//!
//! # Example
//!
//! ```
//! use actix_web::{App, HttpResponse, web};
//! use airmy_verify::idempotency::{Idempotency, MemoryStore};
//! use airmy_verify::{Secret, Verifier};
//! use airmy_verify_actix::{AirmyEvent, AirmyIdempotency, AirmyVerify};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let guard = Idempotency::new(MemoryStore::new(100_000), &verifier);
//! let app = App::new().service(
//!     web::scope("/hooks")
//!         .wrap(AirmyIdempotency::new(guard))
//!         .wrap(AirmyVerify::new(verifier))
//!         .route("/airmy", web::post().to(|AirmyEvent(e): AirmyEvent| async move {
//!             HttpResponse::Ok().body(e.id)
//!         })),
//! );
//! # Ok(())
//! # }
//! ```

use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{HttpMessage, ResponseError};
use airmy_verify::idempotency::{Guarded, Idempotency};
use airmy_verify::{Error, Verified};
use futures_util::future::{self, LocalBoxFuture, Ready};
use tracing::Instrument;

use crate::error::{AirmyError, answer_response};

/// The middleware's configuration (an [`Idempotency`] guard). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyIdempotency {
    guard: Idempotency,
}

impl AirmyIdempotency {
    /// A middleware running the handler once per event id, with `guard`.
    #[must_use]
    pub fn new(guard: Idempotency) -> Self {
        Self { guard }
    }
}

impl<S, B> Transform<S, ServiceRequest> for AirmyIdempotency
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = AirmyIdempotencyMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        future::ready(Ok(AirmyIdempotencyMiddleware {
            service: Rc::new(service),
            guard: self.guard.clone(),
        }))
    }
}

/// The service [`AirmyIdempotency`] wraps around the inner one.
#[derive(Debug)]
pub struct AirmyIdempotencyMiddleware<S> {
    service: Rc<S>,
    guard: Idempotency,
}

type Output<B> = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

impl<S, B> Service<ServiceRequest> for AirmyIdempotencyMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Output<B>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let Some(event_id) = req
            .extensions()
            .get::<Verified>()
            .map(|v| v.id().to_owned())
        else {
            let response = AirmyError::Verify(Error::NotConfigured).error_response();
            return Box::pin(future::ready(Ok(req
                .into_response(response)
                .map_into_right_body())));
        };
        let service = Rc::clone(&self.service);
        let guard = self.guard.clone();
        // Detached: the handler finishes and its outcome is recorded even if this request's
        // future is dropped (client gone, shutdown).
        let task = actix_web::rt::spawn(
            async move {
                let status = |r: &ServiceResponse<B>| r.status().as_u16();
                match guard
                    .run(&event_id, req, |req| service.call(req), status)
                    .await
                {
                    Guarded::Ran(response) => Ok(response?.map_into_left_body()),
                    Guarded::Answered { answer, input } => Ok(input
                        .into_response(answer_response(answer))
                        .map_into_right_body()),
                }
            }
            // In the delivery's span (the verifying middleware's), though detached.
            .instrument(tracing::Span::current()),
        );
        Box::pin(async move {
            match task.await {
                Ok(output) => output,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(_) => Err(actix_web::error::ErrorServiceUnavailable(
                    "the server is shutting down",
                )),
            }
        })
    }
}
