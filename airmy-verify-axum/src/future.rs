//! [`ResponseFuture`]: reads and verifies a delivery, then runs the inner service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use airmy_verify::observe::{Delivery, Outcome};
use airmy_verify::{Error, Intake};
use bytes::{Buf, Bytes};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::rejection::error_response;
use crate::service::BoxError;

pin_project! {
    /// The future of [`AirmyVerify`](crate::AirmyVerify): reads and verifies the delivery,
    /// then runs the inner service, or answers the rejection. It allocates nothing of its own
    /// unless the body is slow to arrive (then it arms the body timeout). Each poll runs in
    /// the delivery's span, and the delivery is counted once however it ends, dropped before
    /// its answer included ([`airmy_verify::observe::Delivery`]).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        state: State<S, S::Future, ReqBody>,
        delivery: Delivery,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, ReqBody> {
        Reading {
            #[pin]
            body: ReqBody,
            reading: Option<Reading<S>>,
        },
        Calling {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<Response<Full<Bytes>>>,
        },
        // Answered (and recorded).
        Done,
    }
}

/// What the future holds while it reads the body.
struct Reading<S> {
    intake: Intake,
    parts: Parts,
    inner: S,
    started: Instant,
    timeout: Duration,
    /// Armed the first time the body is not ready, so a body that arrives with its headers
    /// (the usual case) costs no timer.
    deadline: Option<Pin<Box<Sleep>>>,
}

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<Full<Bytes>>>,
{
    pub(crate) fn reading(
        body: ReqBody,
        intake: Intake,
        parts: Parts,
        inner: S,
        timeout: Duration,
        delivery: Delivery,
    ) -> Self {
        delivery.reading();
        Self {
            delivery,
            state: State::Reading {
                body,
                reading: Some(Reading {
                    intake,
                    parts,
                    inner,
                    started: Instant::now(),
                    timeout,
                    deadline: None,
                }),
            },
        }
    }

    pub(crate) fn rejected(err: &Error, delivery: Delivery) -> Self {
        let response = {
            let _entered = delivery.enter();
            delivery.rejected(err);
            error_response(err)
        };
        Self {
            delivery,
            state: State::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let delivery = &*this.delivery;
        let _entered = delivery.enter();
        let mut state = this.state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Reading { body, reading } => {
                    let read = reading.as_mut().expect(POLLED_AFTER_COMPLETION);
                    let result = ready!(read.poll_body(body, cx));
                    let reading = reading.take().expect(POLLED_AFTER_COMPLETION);
                    delivery.body_read(reading.intake.len());
                    match result.and_then(|()| reading.intake.finish()) {
                        Ok(verified) => {
                            let Reading {
                                mut parts,
                                mut inner,
                                ..
                            } = reading;
                            delivery.verified(&verified);
                            let bytes = verified.bytes().clone();
                            parts.extensions.insert(verified);
                            // A layer inside ours may panic in `call` itself.
                            let guard = delivery.guard();
                            let future = inner.call(Request::from_parts(parts, Full::new(bytes)));
                            drop(guard);
                            State::Calling { future }
                        }
                        Err(err) => {
                            delivery.rejected(&err);
                            State::Rejected {
                                response: Some(error_response(&err)),
                            }
                        }
                    }
                }
                StateProj::Calling { future } => {
                    let guard = delivery.guard();
                    let response = ready!(future.poll(cx));
                    drop(guard);
                    // (Recorded once: not again if an earlier poll panicked.)
                    match &response {
                        Ok(response) => delivery.answered(
                            response.extensions().get::<Outcome>().copied(),
                            response.status().as_u16(),
                        ),
                        // What an outer `HandleErrorLayer` answers is not ours to see.
                        Err(_) => delivery.failed(),
                    }
                    state.set(State::Done);
                    return Poll::Ready(response.map(|r| r.map(ResponseBody::inner)));
                }
                StateProj::Rejected { response } => {
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
                StateProj::Done => panic!("{POLLED_AFTER_COMPLETION}"),
            };
            state.set(next);
        }
    }
}

impl<S> Reading<S> {
    /// Reads `body` into the intake to its end, within the verifier's limit and body timeout.
    fn poll_body<B>(
        &mut self,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        loop {
            match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(mut data) = frame.into_data() {
                        // `Bytes` hands itself over here without a copy.
                        self.intake.push(data.copy_to_bytes(data.remaining()))?;
                    }
                }
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(Error::BodyRead)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let deadline = self.deadline.get_or_insert_with(|| {
                        Box::pin(tokio::time::sleep_until(self.started + self.timeout))
                    });
                    ready!(deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(Error::BodyTimeout));
                }
            }
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
