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
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use airmy_verify::idempotency::{Guarded, Idempotency};
use airmy_verify::{Error, SIGNATURE_HEADER, Signature, Verifier};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::rejection::{error_response, guard_response};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone takes the place of the service that was polled ready, which serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let idempotency = self.idempotency.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                let (mut parts, body) = request.into_parts();
                let verified = match read_delivery(&verifier, &parts.headers, body).await {
                    Ok((signature, bytes)) => verifier.verify(&signature, bytes),
                    Err(err) => Err(err),
                };
                match verified {
                    Ok(verified) => {
                        tracing::debug!(
                            target: "airmy_verify",
                            event_id = %verified.envelope.id,
                            event_type = verified.envelope.event_type(),
                            "AIRMY webhook delivery verified"
                        );
                        let guarded = idempotency.map(|g| (g, verified.envelope.id.clone()));
                        let bytes = verified.bytes.clone();
                        parts.extensions.insert(verified);
                        let request = Request::from_parts(parts, Full::new(bytes));
                        let Some((guard, event_id)) = guarded else {
                            return Ok(inner.call(request).await?.map(Either::Left));
                        };
                        let success = |r: &Response<ResBody>| r.status().is_success();
                        let call = |request| inner.call(request);
                        match guard.run(&event_id, request, call, success).await {
                            Guarded::Ran(response) => Ok(response?.map(Either::Left)),
                            Guarded::Answered { status, body, .. } => {
                                Ok(guard_response(status, body).map(Either::Right))
                            }
                        }
                    }
                    Err(err) => Ok(error_response(&err).map(Either::Right)),
                }
            }),
        }
    }
}

type Output<B, E> = Result<Response<ResponseBody<B>>, E>;

/// The future of [`AirmyVerify`].
pub struct ResponseFuture<B, E> {
    inner: Pin<Box<dyn Future<Output = Output<B, E>> + Send>>,
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Output<B, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// Checks the headers, then reads the body within the verifier's limit: the part of a
/// delivery's verification that needs HTTP, shared by the layer and the extractors.
pub(crate) async fn read_delivery<B>(
    verifier: &Verifier,
    headers: &HeaderMap,
    body: B,
) -> Result<(Signature, Bytes), Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let hinted = body.size_hint().lower();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(hinted, |len| len.max(hinted));
    let signature = verifier.check_headers(
        headers
            .get_all(SIGNATURE_HEADER)
            .iter()
            .map(HeaderValue::as_bytes),
        Some(declared),
    )?;
    match Limited::new(body, verifier.max_body_size()).collect().await {
        Ok(collected) => Ok((signature, collected.to_bytes())),
        Err(err) if err.is::<LengthLimitError>() => Err(verifier.body_too_large()),
        Err(_) => Err(Error::BodyRead),
    }
}
