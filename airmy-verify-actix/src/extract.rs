//! Extractors that hand a handler a verified AIRMY event, typed.
//!
//! - [`AirmyEvent`] (any event, as the [`Event`] enum) and `AirmyEvent<RunCompleted>` (one
//!   event type; any [`Payload`](EventPayload) works).
//! - [`VerifiedBytes`]: the raw verified payload, to queue it or parse it later.
//!
//! Behind the [`AirmyVerify`](crate::AirmyVerify) middleware they take the delivery it verified
//! from the request extensions: nothing is hashed or parsed twice. Without it they verify the
//! request themselves with the [`Verifier`] in `app_data` (see [`config`](crate::config)),
//! refusing an over-limit `Content-Length` before reading and enforcing the limit again while
//! the body streams in. With neither they answer 500 and log why: an unverified body never
//! reaches the handler.
//!
//! A typed extractor meeting another event type answers **422** with
//! `{"error":"unexpected_event_type"}`: the delivery is authentic but this route cannot process
//! it, and the 4xx shows in AIRMY's delivery history. To decide in the handler instead, extract
//! `Result<AirmyEvent<T>, AirmyError>`.
//!
//! # Example
//!
//! ```
//! use actix_web::{App, HttpResponse, web};
//! use airmy_verify::{Event, Secret, Verifier, event::RunCompleted};
//! use airmy_verify_actix::AirmyEvent;
//!
//! async fn on_event(AirmyEvent(event): AirmyEvent) -> HttpResponse {
//!     match event.data {
//!         Event::RunCompleted(run) => println!("run {:?}: {:?} ms", run.id, run.latency_ms),
//!         other => println!("{} ignored", other.event_type()),
//!     }
//!     HttpResponse::Ok().finish()
//! }
//!
//! async fn on_run(AirmyEvent(run): AirmyEvent<RunCompleted>) -> HttpResponse {
//!     HttpResponse::Ok().body(format!("{:?}", run.data.tokens_used))
//! }
//!
//! # fn main() -> Result<(), airmy_verify::InvalidSecret> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let app = App::new()
//!     .app_data(verifier)
//!     .service(web::resource("/hooks/airmy").route(web::post().to(on_event)))
//!     .service(web::resource("/hooks/airmy/runs").route(web::post().to(on_run)));
//! # Ok(())
//! # }
//! ```

use std::future::poll_fn;
use std::ops::Deref;
use std::task::{Context, Poll, ready};

use actix_web::dev::Payload;
use actix_web::http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use airmy_verify::event::Payload as EventPayload;
use airmy_verify::verifier::BodyBuffer;
use airmy_verify::{
    Envelope, Error, Event, SIGNATURE_HEADER, Signature, Verified, VerifiedPayload, Verifier,
};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{self, Either, LocalBoxFuture, Ready};

use crate::config::verifier_from_req;
use crate::error::AirmyError;

/// A verified AIRMY event: `AirmyEvent` for any type ([`Event`]), `AirmyEvent<RunCompleted>`
/// for one. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyEvent<T = Event>(pub Envelope<T>);

impl<T> Deref for AirmyEvent<T> {
    type Target = Envelope<T>;

    fn deref(&self) -> &Envelope<T> {
        &self.0
    }
}

impl<T: EventPayload + 'static> FromRequest for AirmyEvent<T> {
    type Error = AirmyError;
    type Future = Extract<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // Behind the middleware: the verified delivery is already here, no future to box.
        if let Some(verified) = req.extensions_mut().remove::<Verified>() {
            return Either::Left(future::ready(
                verified.envelope.into_typed().map(Self).map_err(Into::into),
            ));
        }
        let req = req.clone();
        let mut payload = payload.take();
        Either::Right(Box::pin(async move {
            let verifier = verifier_from_req(&req)?;
            let (signature, bytes) = read_delivery(&verifier, req.headers(), &mut payload).await?;
            Ok(Self(verifier.verify_event::<T>(&signature, &bytes)?))
        }))
    }
}

/// The future of the extractors: ready at once behind the middleware, boxed otherwise.
pub type Extract<T> =
    Either<Ready<Result<T, AirmyError>>, LocalBoxFuture<'static, Result<T, AirmyError>>>;

/// The raw payload of a verified delivery (the same bytes), with its `id`, `type` and
/// `created_at`; [`VerifiedPayload::parse`] parses it later. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct VerifiedBytes(pub VerifiedPayload);

impl Deref for VerifiedBytes {
    type Target = VerifiedPayload;

    fn deref(&self) -> &VerifiedPayload {
        &self.0
    }
}

impl FromRequest for VerifiedBytes {
    type Error = AirmyError;
    type Future = Extract<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if let Some(verified) = req.extensions_mut().remove::<Verified>() {
            return Either::Left(future::ready(Ok(Self(verified.into_payload()))));
        }
        let req = req.clone();
        let mut payload = payload.take();
        Either::Right(Box::pin(async move {
            let verifier = verifier_from_req(&req)?;
            let (signature, bytes) = read_delivery(&verifier, req.headers(), &mut payload).await?;
            Ok(Self(verifier.verify_payload(&signature, bytes)?))
        }))
    }
}

/// The signature header, parsed once.
const SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER);

/// The core's checks before any of the payload is read: the signature header(s), then the
/// declared `Content-Length`, which it also returns.
pub(crate) fn check_headers(
    verifier: &Verifier,
    headers: &HeaderMap,
) -> Result<(Signature, Option<u64>), Error> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let signature = verifier.check_headers(
        headers.get_all(&SIGNATURE).map(HeaderValue::as_bytes),
        declared,
    )?;
    Ok((signature, declared))
}

/// Reads `payload` into `buffer` to its end. The core's buffer keeps a payload that arrives as
/// one chunk (the usual case) without a copy, and enforces the limit again on what arrives.
pub(crate) fn poll_read(
    payload: &mut Payload,
    buffer: &mut BodyBuffer,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>> {
    while let Some(chunk) = ready!(payload.poll_next_unpin(cx)) {
        buffer.push(chunk.map_err(|_| Error::BodyRead)?)?;
    }
    Poll::Ready(Ok(()))
}

/// Checks the headers, then reads the payload within the verifier's limit: the part of a
/// delivery's verification that needs HTTP, for the extractors used without the middleware.
async fn read_delivery(
    verifier: &Verifier,
    headers: &HeaderMap,
    payload: &mut Payload,
) -> Result<(Signature, Bytes), Error> {
    let (signature, declared) = check_headers(verifier, headers)?;
    let mut buffer = verifier.body_buffer(declared);
    poll_fn(|cx| poll_read(payload, &mut buffer, cx)).await?;
    Ok((signature, buffer.finish()))
}
