//! A middleware that refuses forged, tampered, stale and oversized AIRMY deliveries before any
//! handler of the webhook `scope` or `resource` it wraps runs.
//!
//! [`AirmyVerify`] reads the body into the core's [`Intake`] (refusing an over-limit
//! `Content-Length` before reading, enforcing the limit while it streams, and answering 408
//! with `Connection: close` when it has not arrived within the verifier's body timeout, 5 s by
//! default), verifies, parses and checks freshness once, then puts the same bytes back as the
//! request payload and the [`Verified`] delivery in the request extensions, where the
//! [extractors](crate::extract) find it (and `web::Bytes`, `String` or `web::Json` still read
//! the body). A refused request gets the core's status, a short JSON body and a `tracing`
//! event, and no handler runs.
//!
//! To run handlers once per event id, add [`AirmyIdempotency`](crate::AirmyIdempotency)
//! inside it (actix runs the last `wrap` first):
//! `.wrap(AirmyIdempotency::new(guard)).wrap(AirmyVerify::new(verifier))`.
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
use actix_web::dev::Extensions;
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use actix_web::rt::time::{Instant, Sleep, sleep_until};
use actix_web::web::PayloadConfig;
use actix_web::{HttpMessage, ResponseError};
use airmy_verify::observe::{Delivery, Outcome};
use airmy_verify::verifier::parse_content_length;
use airmy_verify::{Error, Intake, SIGNATURE_HEADER, Verified, Verifier};
use futures_util::future::{self, Ready};
use futures_util::{Stream, StreamExt, stream};
use pin_project_lite::pin_project;

use crate::error::AirmyError;

/// The signature header, parsed once.
const SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER);

/// The middleware's configuration (a [`Verifier`]); wrap the webhook `scope` or `resource`
/// with it (on the `App`, it would also answer every unknown path 401; see the
/// [crate docs](crate)).
///
/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyVerify {
    verifier: Verifier,
}

impl AirmyVerify {
    /// A middleware checking deliveries with `verifier`.
    #[must_use]
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
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
        // actix's `web::Bytes` and `String` extractors stop at 256 KiB unless a `PayloadConfig`
        // says otherwise: behind the middleware they read a body the verifier already allowed,
        // so they get the verifier's limit (a `PayloadConfig` set on the resource still wins).
        let mut data = Extensions::new();
        data.insert(PayloadConfig::new(self.verifier.max_body_size()));
        future::ready(Ok(AirmyVerifyMiddleware {
            service: Rc::new(service),
            verifier: self.verifier.clone(),
            data: Rc::new(data),
        }))
    }
}

/// The service [`AirmyVerify`] wraps around the inner one.
#[derive(Debug)]
pub struct AirmyVerifyMiddleware<S> {
    service: Rc<S>,
    verifier: Verifier,
    data: Rc<Extensions>,
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
        let delivery = Delivery::open();
        let state = match open_intake(&self.verifier, req.headers()) {
            Ok(intake) => {
                delivery.reading();
                State::Reading {
                    reading: Some(Reading {
                        payload: req.take_payload(),
                        intake,
                        req,
                        service: Rc::clone(&self.service),
                        data: Rc::clone(&self.data),
                        started: Instant::now(),
                        timeout: self.verifier.body_timeout(),
                        deadline: None,
                    }),
                }
            }
            Err(err) => {
                let _entered = delivery.enter();
                State::Rejected {
                    response: Some(reject(&delivery, req, err)),
                }
            }
        };
        ResponseFuture { state, delivery }
    }
}

type Output<B> = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

pin_project! {
    /// The future of [`AirmyVerifyMiddleware`]: reads and verifies the delivery, then runs the
    /// inner service, or answers the rejection. It allocates nothing of its own unless the
    /// body is slow to arrive (then it arms the body timeout). Each poll runs in the
    /// delivery's span, and the delivery is counted once however it ends, dropped before its
    /// answer included ([`airmy_verify::observe::Delivery`]).
    pub struct ResponseFuture<S, B>
    where
        S: Service<ServiceRequest>,
    {
        #[pin]
        state: State<S, S::Future, B>,
        delivery: Delivery,
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
        Rejected {
            response: Option<ServiceResponse<EitherBody<B>>>,
        },
        // Answered (and recorded).
        Done,
    }
}

/// What [`ResponseFuture`] holds while it reads the payload.
struct Reading<S> {
    req: ServiceRequest,
    payload: Payload,
    intake: Intake,
    service: Rc<S>,
    data: Rc<Extensions>,
    started: Instant,
    timeout: std::time::Duration,
    /// Armed the first time the payload is not ready.
    deadline: Option<Pin<Box<Sleep>>>,
}

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Output = Output<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let delivery = &*this.delivery;
        let _entered = delivery.enter();
        let mut state = this.state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Reading { reading } => {
                    let read = ready!(
                        reading
                            .as_mut()
                            .expect(POLLED_AFTER_COMPLETION)
                            .poll_timed(cx)
                    );
                    reading
                        .take()
                        .expect(POLLED_AFTER_COMPLETION)
                        .finish(read, delivery)
                }
                StateProj::Calling { future } => {
                    let guard = delivery.guard();
                    let response = ready!(future.poll(cx));
                    drop(guard);
                    let (outcome, status) = match &response {
                        Ok(response) => (
                            response.response().extensions().get::<Outcome>().copied(),
                            response.status(),
                        ),
                        // actix answers the error's own response (built here only to read
                        // its status, which `ResponseError::status_code` may not tell).
                        Err(err) => (None, err.error_response().status()),
                    };
                    // (Recorded once: not again if an earlier poll panicked.)
                    delivery.answered(outcome, status.as_u16());
                    state.set(State::Done);
                    return Poll::Ready(response.map(ServiceResponse::map_into_left_body));
                }
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response.take().expect(POLLED_AFTER_COMPLETION)));
                }
                StateProj::Done => panic!("{POLLED_AFTER_COMPLETION}"),
            };
            state.set(next);
        }
    }
}

impl<S> Reading<S> {
    /// Reads the payload to its end, within the limit and the body timeout.
    fn poll_timed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if let Poll::Ready(read) = poll_read(&mut self.payload, &mut self.intake, cx) {
            return Poll::Ready(read);
        }
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(sleep_until(self.started + self.timeout)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(Error::BodyTimeout))
    }

    /// The state after the payload was read: verified, then the inner service, or the
    /// rejection.
    fn finish<B>(self, read: Result<(), Error>, delivery: &Delivery) -> State<S, S::Future, B>
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>
            + 'static,
        B: MessageBody + 'static,
    {
        let Self {
            mut req,
            intake,
            service,
            data,
            ..
        } = self;
        delivery.body_read(intake.len());
        let verified = match read.and_then(|()| intake.finish()) {
            Ok(verified) => verified,
            Err(err) => {
                return State::Rejected {
                    response: Some(reject(delivery, req, err)),
                };
            }
        };
        delivery.verified(&verified);
        // The same bytes, as a one-item stream (a single allocation).
        let bytes: Result<_, PayloadError> = Ok(verified.bytes().clone());
        let stream: Pin<Box<dyn Stream<Item = _>>> = Box::pin(stream::once(future::ready(bytes)));
        req.set_payload(Payload::from(stream));
        req.add_data_container(data);
        req.extensions_mut().insert::<Verified>(verified);
        // A middleware inside ours may panic in `call` itself.
        let guard = delivery.guard();
        let future = service.call(req);
        drop(guard);
        State::Calling { future }
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
fn reject<B>(
    delivery: &Delivery,
    req: ServiceRequest,
    err: Error,
) -> ServiceResponse<EitherBody<B>> {
    delivery.rejected(&err);
    let response = AirmyError::from(err).error_response();
    req.into_response(response).map_into_right_body()
}

/// Opens the core's intake with the request's signature header(s) and `Content-Length`.
pub(crate) fn open_intake(verifier: &Verifier, headers: &HeaderMap) -> Result<Intake, Error> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| parse_content_length(v.as_bytes()));
    verifier.intake(
        headers.get_all(&SIGNATURE).map(HeaderValue::as_bytes),
        declared,
    )
}

/// Reads `payload` into `intake` to its end. The intake keeps chunks as they arrive and
/// enforces the limit on each.
pub(crate) fn poll_read(
    payload: &mut Payload,
    intake: &mut Intake,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>> {
    while let Some(chunk) = ready!(payload.poll_next_unpin(cx)) {
        intake.push(chunk.map_err(|_| Error::BodyRead)?)?;
    }
    Poll::Ready(Ok(()))
}
