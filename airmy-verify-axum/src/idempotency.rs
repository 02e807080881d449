//! [`AirmyIdempotencyLayer`]: runs the inner service once per verified event id.
//!
//! It reads the event id from the delivery the [`AirmyVerifyLayer`](crate::AirmyVerifyLayer)
//! verified, so it goes **inside** that layer: `AirmyVerifyLayer::new(v).idempotency(guard)`
//! stacks both in the right order. A request no verify layer saw is answered 500
//! `{"error":"verifier_not_configured"}` (fail closed). Decisions and responses are the
//! core's ([`airmy_verify::idempotency`]): 200 `{"status":"duplicate",…}`, 409 in flight,
//! 503 when the store is down under `OnStoreError::Refuse`.
//!
//! **The inner service runs detached from the connection**, as a task of its own
//! (`tokio::spawn`): when AIRMY hangs up at its 10 s timeout, the server shuts down or a
//! timeout layer drops the response future, the handler still runs to completion and its
//! outcome is committed, so AIRMY's next retry gets `200 duplicate` rather than a 409 for the
//! rest of the lease. Wait for such handlers at shutdown with
//! [`Idempotency::wait_idle`]. A panic of the inner service releases the claim and is resumed
//! in the response future (so `CatchPanicLayer` still sees it).
//!
//! # Example
//!
//! ```
//! use airmy_verify::idempotency::{Idempotency, MemoryStore};
//! use airmy_verify::{Secret, Verifier};
//! use airmy_verify_axum::{AirmyEvent, AirmyIdempotencyLayer, AirmyVerifyLayer};
//! use axum::{Router, routing::post};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let guard = Idempotency::new(MemoryStore::new(100_000), &verifier);
//! let app: Router = Router::new()
//!     .route("/hooks/airmy", post(|AirmyEvent(e): AirmyEvent| async move { e.id }))
//!     .route_layer(
//!         ServiceBuilder::new()
//!             .layer(AirmyVerifyLayer::new(verifier))
//!             .layer(AirmyIdempotencyLayer::new(guard)),
//!     );
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use airmy_verify::idempotency::{Guarded, Idempotency};
use airmy_verify::{Answer, Error, Verified};
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::body::ResponseBody;
use crate::rejection::{answer_response, error_response};

/// Applies [`AirmyIdempotency`] to a service. Configuration only; cheap to clone.
///
/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyIdempotencyLayer {
    guard: Idempotency,
}

impl AirmyIdempotencyLayer {
    /// A layer running the inner service once per event id, with `guard`.
    #[must_use]
    pub fn new(guard: Idempotency) -> Self {
        Self { guard }
    }
}

impl<S> Layer<S> for AirmyIdempotencyLayer {
    type Service = AirmyIdempotency<S>;

    fn layer(&self, inner: S) -> AirmyIdempotency<S> {
        AirmyIdempotency {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// Runs `S` once per verified event id; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyIdempotency<S> {
    inner: S,
    guard: Idempotency,
}

impl<S> AirmyIdempotency<S> {
    /// Wraps `inner` with `guard`.
    #[must_use]
    pub fn new(inner: S, guard: Idempotency) -> Self {
        Self { inner, guard }
    }

    /// A layer wrapping services in `AirmyIdempotency`.
    #[must_use]
    pub fn layer(guard: Idempotency) -> AirmyIdempotencyLayer {
        AirmyIdempotencyLayer::new(guard)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type Output<B, E> = Result<Response<ResponseBody<B>>, E>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AirmyIdempotency<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = IdempotencyFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Some(event_id) = request
            .extensions()
            .get::<Verified>()
            .map(|v| v.id().to_owned())
        else {
            let response = error_response(&Error::NotConfigured).map(ResponseBody::full);
            return IdempotencyFuture(Box::pin(std::future::ready(Ok(response))));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        // Detached: the handler finishes and its outcome is recorded even if this request's
        // future is dropped (client gone, shutdown, timeout layer).
        let task = tokio::spawn(
            async move {
                let status = |r: &Response<ResBody>| r.status().as_u16();
                match guard
                    .run(&event_id, request, |r| inner.call(r), status)
                    .await
                {
                    Guarded::Ran(response) => response.map(|r| r.map(ResponseBody::inner)),
                    Guarded::Answered { answer, .. } => {
                        Ok(answer_response(answer).map(ResponseBody::full))
                    }
                }
            }
            // In the delivery's span (the verifying layer's), though detached.
            .instrument(tracing::Span::current()),
        );
        IdempotencyFuture(Box::pin(async move {
            match task.await {
                Ok(output) => output,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                // The runtime is shutting down: nobody waits for this answer any more.
                Err(_) => Ok(answer_response(Answer::shutting_down()).map(ResponseBody::full)),
            }
        }))
    }
}

/// The future of [`AirmyIdempotency`]: the detached handler's answer, or the guard's.
pub struct IdempotencyFuture<B, E>(Pin<Box<dyn Future<Output = Output<B, E>> + Send>>);

impl<B, E> Future for IdempotencyFuture<B, E> {
    type Output = Output<B, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<B, E> fmt::Debug for IdempotencyFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyFuture").finish_non_exhaustive()
    }
}
