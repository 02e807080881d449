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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use airmy_verify::idempotency::{Guarded, Idempotency};
use airmy_verify::verifier::BodyBuffer;
use airmy_verify::{Error, Signature, Verified, Verifier};
use futures_util::future::{self, LocalBoxFuture, Ready};
use futures_util::{Stream, stream};
use pin_project_lite::pin_project;

use crate::error::AirmyError;
use crate::extract::{check_headers, poll_read};

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
        future::ready(Ok(AirmyVerifyMiddleware {
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
    type Future = ResponseFuture<S, B>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let state = match check_headers(&self.verifier, req.headers()) {
            Ok((signature, declared)) => State::Reading {
                reading: Some(Reading {
                    payload: req.take_payload(),
                    buffer: self.verifier.body_buffer(declared),
                    req,
                    signature,
                    service: Rc::clone(&self.service),
                    verifier: self.verifier.clone(),
                    idempotency: self.idempotency.clone(),
                }),
            },
            Err(err) => State::Rejected {
                response: Some(reject(req, err)),
            },
        };
        ResponseFuture { state }
    }
}

type Output<B> = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

pin_project! {
    /// The future of [`AirmyVerifyMiddleware`]: reads and verifies the delivery, then runs the
    /// inner service, or answers the rejection. It allocates nothing of its own unless an
    /// idempotency guard is configured.
    pub struct ResponseFuture<S, B>
    where
        S: Service<ServiceRequest>,
    {
        #[pin]
        state: State<S, S::Future, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, B> {
        Reading {
            reading: Option<Reading<S>>,
        },
        Calling {
            #[pin]
            future: F,
        },
        Guarded {
            future: LocalBoxFuture<'static, Output<B>>,
        },
        Rejected {
            response: Option<ServiceResponse<EitherBody<B>>>,
        },
    }
}

/// What [`ResponseFuture`] holds while it reads the payload.
struct Reading<S> {
    req: ServiceRequest,
    payload: Payload,
    buffer: BodyBuffer,
    signature: Signature,
    service: Rc<S>,
    verifier: Verifier,
    idempotency: Option<Idempotency>,
}

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Output = Output<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Reading { reading } => {
                    let Reading {
                        payload, buffer, ..
                    } = reading.as_mut().expect(POLLED_AFTER_COMPLETION);
                    let read = ready!(poll_read(payload, buffer, cx));
                    reading.take().expect(POLLED_AFTER_COMPLETION).finish(read)
                }
                StateProj::Calling { future } => {
                    return future.poll(cx).map_ok(ServiceResponse::map_into_left_body);
                }
                StateProj::Guarded { future } => return future.as_mut().poll(cx),
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response.take().expect(POLLED_AFTER_COMPLETION)));
                }
            };
            state.set(next);
        }
    }
}

impl<S> Reading<S> {
    /// The state after the payload was read: verified, then the inner service (under the
    /// guard, if any), or the rejection.
    fn finish<B>(self, read: Result<(), Error>) -> State<S, S::Future, B>
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>
            + 'static,
        B: MessageBody + 'static,
    {
        let Self {
            mut req,
            buffer,
            signature,
            service,
            verifier,
            idempotency,
            ..
        } = self;
        let verified = match read.and_then(|()| verifier.verify(&signature, buffer.finish())) {
            Ok(verified) => verified,
            Err(err) => {
                return State::Rejected {
                    response: Some(reject(req, err)),
                };
            }
        };
        let event_id = idempotency.as_ref().map(|_| verified.envelope.id.clone());
        // The same bytes, as a one-item stream (a single allocation).
        let bytes: Result<_, PayloadError> = Ok(verified.bytes.clone());
        let stream: Pin<Box<dyn Stream<Item = _>>> = Box::pin(stream::once(future::ready(bytes)));
        req.set_payload(Payload::from(stream));
        req.extensions_mut().insert::<Verified>(verified);
        match idempotency.zip(event_id) {
            None => State::Calling {
                future: service.call(req),
            },
            Some((guard, event_id)) => State::Guarded {
                future: guarded(guard, event_id, service, req),
            },
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<ServiceRequest>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The answer to a refused delivery: the core's status and body, and a `tracing` event.
fn reject<B>(req: ServiceRequest, err: Error) -> ServiceResponse<EitherBody<B>> {
    let response = AirmyError::from(err).error_response();
    req.into_response(response).map_into_right_body()
}

/// Runs the inner service under the idempotency guard (see [`Idempotency::run`]).
fn guarded<S, B>(
    guard: Idempotency,
    event_id: String,
    service: Rc<S>,
    req: ServiceRequest,
) -> LocalBoxFuture<'static, Output<B>>
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
