//! A tower [`Layer`] that refuses forged, tampered, stale and oversized AIRMY deliveries before
//! any handler runs.
//!
//! [`AirmyVerifyLayer`] works on any `http::Request<B>` whose body implements
//! [`http_body::Body`], so it serves axum routers, plain hyper services and any tower-based
//! server. For every request it:
//!
//! 1. checks the `X-AIRMY-Signature` header(s) and the declared `Content-Length`, before reading
//!    any of the body (401 / 413);
//! 2. reads the body through [`http_body_util::Limited`], so memory never grows past the
//!    verifier's limit, whatever the transfer encoding (413);
//! 3. verifies, parses and checks freshness with [`Verifier::verify`], once (401 / 400 / 422);
//! 4. calls the inner service with the same bytes as an `http_body_util::Full` body and the
//!    [`Verified`](airmy_verify::Verified) delivery in the request extensions, where [`AirmyEvent`](crate::AirmyEvent)
//!    and [`VerifiedBytes`](crate::VerifiedBytes) find it without hashing or parsing again.
//!
//! A refused request never reaches the inner service: it gets the core's status, a short fixed
//! JSON body and a `tracing` event (see [`rejection`](crate::rejection)).
//!
//! # Example
//!
//! ```
//! use airmy_verify::{Event, Secret, Verifier};
//! use airmy_verify_axum::{AirmyEvent, AirmyVerifyLayer};
//! use axum::{Router, http::StatusCode, routing::post};
//!
//! async fn on_event(AirmyEvent(envelope): AirmyEvent) -> StatusCode {
//!     match envelope.data {
//!         Event::RunCompleted(run) => println!("run {:?} finished", run.id),
//!         other => println!("{} ignored", other.event_type()),
//!     }
//!     StatusCode::OK
//! }
//!
//! # fn main() -> Result<(), airmy_verify::InvalidSecret> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let app: Router = Router::new()
//!     .route("/hooks/airmy", post(on_event))
//!     .layer(AirmyVerifyLayer::new(verifier));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use airmy_verify::idempotency::{Guarded, Idempotency};
use airmy_verify::verifier::BodyBuffer;
use airmy_verify::{Error, SIGNATURE_HEADER, Signature, Verifier};
use bytes::{Buf, Bytes};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::{Either, Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::rejection::{error_response, guard_response};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The signature header, parsed once.
const SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER);

/// The response body of [`AirmyVerify`]: the inner service's body, or a rejection's JSON.
pub type ResponseBody<B> = Either<B, Full<Bytes>>;

/// Applies [`AirmyVerify`] to a service. Configuration only; cheap to clone.
///
/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyVerifyLayer {
    verifier: Verifier,
    idempotency: Option<Idempotency>,
}

impl AirmyVerifyLayer {
    /// A layer checking deliveries with `verifier` (its secrets, body limit and tolerance).
    #[must_use]
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            idempotency: None,
        }
    }

    /// Runs the inner service once per verified event id, with `guard` (see
    /// [`airmy_verify::idempotency`]): a committed id answers 200 `{"status":"duplicate",…}`,
    /// an id in flight 409, and a non-2xx answer, error or panic of the inner service releases
    /// the claim so AIRMY's retry runs it again. Defaults to off.
    #[must_use]
    pub fn idempotency(mut self, guard: Idempotency) -> Self {
        self.idempotency = Some(guard);
        self
    }
}

impl<S> Layer<S> for AirmyVerifyLayer {
    type Service = AirmyVerify<S>;

    fn layer(&self, inner: S) -> AirmyVerify<S> {
        AirmyVerify {
            inner,
            verifier: self.verifier.clone(),
            idempotency: self.idempotency.clone(),
        }
    }
}

/// The service of [`AirmyVerifyLayer`]: verifies each request before calling `S`.
///
/// `S` receives `Request<Full<Bytes>>` holding the verified bytes, with the [`Verified`](airmy_verify::Verified)
/// delivery in its extensions. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyVerify<S> {
    inner: S,
    verifier: Verifier,
    idempotency: Option<Idempotency>,
}

impl<S> AirmyVerify<S> {
    /// Wraps `inner`, checking deliveries with `verifier`.
    #[must_use]
    pub fn new(inner: S, verifier: Verifier) -> Self {
        Self {
            inner,
            verifier,
            idempotency: None,
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AirmyVerify<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let declared = declared_length(&parts.headers, &body);
        let state = match check_headers(&self.verifier, &parts.headers, declared) {
            Ok(signature) => {
                // The clone takes the place of the service that was polled ready, which serves
                // this request once it is verified.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                State::Reading {
                    body: Limited::new(body, self.verifier.max_body_size()),
                    reading: Some(Reading {
                        buffer: self.verifier.body_buffer(Some(declared)),
                        parts,
                        signature,
                        inner,
                        verifier: self.verifier.clone(),
                        idempotency: self.idempotency.clone(),
                    }),
                }
            }
            Err(err) => State::Rejected {
                response: Some(error_response(&err)),
            },
        };
        ResponseFuture { state }
    }
}

/// What [`ResponseFuture`] holds while it reads the body.
struct Reading<S> {
    buffer: BodyBuffer,
    parts: Parts,
    signature: Signature,
    inner: S,
    verifier: Verifier,
    idempotency: Option<Idempotency>,
}

type Output<B, E> = Result<Response<ResponseBody<B>>, E>;

/// What the idempotency guard made of a request: the inner service's response, or its own.
enum GuardOutcome<R> {
    Ran(R),
    Answered(Response<Full<Bytes>>),
}

type GuardedFuture<R, E> = Pin<Box<dyn Future<Output = Result<GuardOutcome<R>, E>> + Send>>;

pin_project! {
    /// The future of [`AirmyVerify`]: reads and verifies the delivery, then runs the inner
    /// service, or answers the rejection. It allocates nothing of its own unless an
    /// idempotency guard is configured.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        state: StateOf<S, ReqBody>,
    }
}

type StateOf<S, ReqBody> = State<
    S,
    <S as Service<Request<Full<Bytes>>>>::Future,
    ReqBody,
    GuardedFuture<
        <S as Service<Request<Full<Bytes>>>>::Response,
        <S as Service<Request<Full<Bytes>>>>::Error,
    >,
>;

pin_project! {
    #[project = StateProj]
    enum State<S, F, ReqBody, G> {
        Reading {
            #[pin]
            body: Limited<ReqBody>,
            reading: Option<Reading<S>>,
        },
        Calling {
            #[pin]
            future: F,
        },
        Guarded {
            future: G,
        },
        Rejected {
            response: Option<Response<Full<Bytes>>>,
        },
    }
}

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Output = Output<ResBody, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Reading { body, reading } => {
                    let buffer = &mut reading.as_mut().expect(POLLED_AFTER_COMPLETION).buffer;
                    let read = ready!(poll_read(body, buffer, cx));
                    let reading = reading.take().expect(POLLED_AFTER_COMPLETION);
                    reading.finish(read)
                }
                StateProj::Calling { future } => {
                    return future.poll(cx).map_ok(|r| r.map(Either::Left));
                }
                StateProj::Guarded { future } => {
                    return future.as_mut().poll(cx).map_ok(|outcome| match outcome {
                        GuardOutcome::Ran(r) => r.map(Either::Left),
                        GuardOutcome::Answered(r) => r.map(Either::Right),
                    });
                }
                StateProj::Rejected { response } => {
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(Ok(response.map(Either::Right)));
                }
            };
            state.set(next);
        }
    }
}

impl<S> Reading<S> {
    /// The state after the body was read: verified, then the inner service (under the guard,
    /// if any), or the rejection.
    fn finish<ReqBody, ResBody>(self, read: Result<(), Error>) -> StateOf<S, ReqBody>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ResBody: Send + 'static,
    {
        let Self {
            buffer,
            mut parts,
            signature,
            mut inner,
            verifier,
            idempotency,
        } = self;
        let verified = match read.and_then(|()| verifier.verify(&signature, buffer.finish())) {
            Ok(verified) => verified,
            Err(err) => {
                return State::Rejected {
                    response: Some(error_response(&err)),
                };
            }
        };
        let bytes = verified.bytes.clone();
        let event_id = idempotency.as_ref().map(|_| verified.envelope.id.clone());
        parts.extensions.insert(verified);
        let request = Request::from_parts(parts, Full::new(bytes));
        match idempotency.zip(event_id) {
            None => State::Calling {
                future: inner.call(request),
            },
            Some((guard, event_id)) => State::Guarded {
                future: Box::pin(async move {
                    let success = |r: &Response<ResBody>| r.status().is_success();
                    let call = |request| inner.call(request);
                    match guard.run(&event_id, request, call, success).await {
                        Guarded::Ran(response) => response.map(GuardOutcome::Ran),
                        Guarded::Answered { status, body, .. } => {
                            Ok(GuardOutcome::Answered(guard_response(status, body)))
                        }
                    }
                }),
            },
        }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The length a request announces: its `Content-Length` or its body's lower size hint,
/// whichever is larger (a body longer than it says is stopped by [`Limited`] anyway).
fn declared_length<B: Body>(headers: &HeaderMap, body: &B) -> u64 {
    let hinted = body.size_hint().lower();
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(hinted, |len| len.max(hinted))
}

/// The core's checks before any of the body is read: the signature header(s), the length.
fn check_headers(
    verifier: &Verifier,
    headers: &HeaderMap,
    declared: u64,
) -> Result<Signature, Error> {
    verifier.check_headers(
        headers
            .get_all(&SIGNATURE)
            .iter()
            .map(HeaderValue::as_bytes),
        Some(declared),
    )
}

/// Reads `body` into `buffer` to its end; the limit is enforced by [`Limited`] and again by
/// the buffer.
fn poll_read<B>(
    mut body: Pin<&mut Limited<B>>,
    buffer: &mut BodyBuffer,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    loop {
        match ready!(body.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    // `Bytes` hands itself over here without a copy.
                    buffer.push(data.copy_to_bytes(data.remaining()))?;
                }
            }
            Some(Err(err)) if err.is::<LengthLimitError>() => {
                return Poll::Ready(Err(buffer.too_large()));
            }
            Some(Err(_)) => return Poll::Ready(Err(Error::BodyRead)),
            None => return Poll::Ready(Ok(())),
        }
    }
}

/// Checks the headers, then reads the body within the verifier's limit: the part of a
/// delivery's verification that needs HTTP, for the extractors used without the layer.
pub(crate) async fn read_delivery<B>(
    verifier: &Verifier,
    headers: &HeaderMap,
    body: B,
) -> Result<(Signature, Bytes), Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = declared_length(headers, &body);
    let signature = check_headers(verifier, headers, declared)?;
    let mut body = std::pin::pin!(Limited::new(body, verifier.max_body_size()));
    let mut buffer = verifier.body_buffer(Some(declared));
    poll_fn(|cx| poll_read(body.as_mut(), &mut buffer, cx)).await?;
    Ok((signature, buffer.finish()))
}
