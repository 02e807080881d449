//! [`AirmyVerify`]: the service that verifies each request before calling the inner one.

use std::task::{Context, Poll};

use airmy_verify::observe::Delivery;
use airmy_verify::verifier::parse_content_length;
use airmy_verify::{SIGNATURE_HEADER, Verifier};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::future::ResponseFuture;
use crate::layer::AirmyVerifyLayer;

/// The signature header, parsed once.
const SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER);

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Verifies each request before calling `S`; see the [crate docs](crate).
///
/// `S` receives `Request<Full<Bytes>>` holding the verified bytes, with the
/// [`Verified`](airmy_verify::Verified) delivery in its extensions, where the extractors find
/// it. A refused request never reaches `S`.
#[derive(Debug, Clone)]
pub struct AirmyVerify<S> {
    inner: S,
    verifier: Verifier,
}

impl<S> AirmyVerify<S> {
    /// Wraps `inner`, checking deliveries with `verifier`.
    #[must_use]
    pub fn new(inner: S, verifier: Verifier) -> Self {
        Self { inner, verifier }
    }

    /// A layer wrapping services in `AirmyVerify` (the same as [`AirmyVerifyLayer::new`]).
    #[must_use]
    pub fn layer(verifier: Verifier) -> AirmyVerifyLayer {
        AirmyVerifyLayer::new(verifier)
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AirmyVerify<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| parse_content_length(v.as_bytes()));
        let signatures = parts
            .headers
            .get_all(&SIGNATURE)
            .iter()
            .map(HeaderValue::as_bytes);
        // Opened before the headers are checked, so that a rejection is counted and logged in
        // its span (`ResponseFuture::rejected` enters it).
        let delivery = Delivery::open();
        match self.verifier.intake(signatures, declared) {
            Ok(intake) => {
                // The clone takes the place of the service that was polled ready, which serves
                // this request once it is verified.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let timeout = self.verifier.body_timeout();
                ResponseFuture::reading(body, intake, parts, inner, timeout, delivery)
            }
            Err(err) => ResponseFuture::rejected(&err, delivery),
        }
    }
}
