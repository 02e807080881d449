//! Extractors that hand a handler a verified AIRMY event, typed.
//!
//! - [`AirmyEvent`] (any event, as the [`Event`] enum) and `AirmyEvent<RunCompleted>` (one
//!   event type; any [`EventData`] works).
//! - [`AirmyDelivery`]: the verified delivery itself, raw bytes included, to queue it or parse
//!   it later.
//!
//! **Behind the [`AirmyVerify`](crate::AirmyVerify) middleware** (recommended) they take the
//! delivery it verified from the request extensions: nothing is hashed or parsed twice, and
//! any number of `AirmyEvent<T>` and `AirmyDelivery` work in one handler, in any order, with
//! `HttpRequest` and with one of actix's body extractors (`web::Bytes`, `String`,
//! `web::Json<T>`): the middleware puts the verified bytes back as the payload, and raises
//! actix's body limit for them to the verifier's. (actix gives the payload to one body
//! extractor only.)
//!
//! **Without it** they verify the request themselves with the [`Verifier`](airmy_verify::Verifier)
//! in `app_data` (as `Verifier` or `web::Data<Verifier>`), refusing an over-limit
//! `Content-Length` before reading and enforcing the limit and the body timeout while the body
//! streams in; several of our extractors in one handler share one verification. Without the
//! middleware, ours are then the **only** body extractors of the handler: actix creates every
//! extractor before it runs any, so a `web::Bytes`, `String` or `web::Json` placed before ours
//! takes the body first (ours then answer **500** `{"error":"body_already_read"}` and log why),
//! and one placed after ours finds the body already taken (empty, or actix's own 400). For the
//! raw bytes use [`AirmyDelivery`]; to mix with actix's body extractors, use the middleware.
//! With no verifier and no middleware ours answer **500** `{"error":"verifier_not_configured"}`.
//! An unverified body never reaches a handler.
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
//! use airmy_verify_actix::{AirmyDelivery, AirmyEvent, AirmyVerify};
//!
//! async fn on_event(AirmyEvent(event): AirmyEvent, AirmyDelivery(raw): AirmyDelivery) -> HttpResponse {
//!     match event.data {
//!         Event::RunCompleted(run) => println!("run {:?}: {:?} ms", run.id, run.latency_ms),
//!         other => println!("{} ignored", other.event_type()),
//!     }
//!     HttpResponse::Ok().body(raw.into_bytes())
//! }
//!
//! async fn on_run(AirmyEvent(run): AirmyEvent<RunCompleted>, body: String) -> HttpResponse {
//!     HttpResponse::Ok().body(format!("{:?} of {} bytes", run.data.tokens_used, body.len()))
//! }
//!
//! # fn main() -> Result<(), airmy_verify::InvalidSecret> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let app = App::new().service(
//!     web::scope("/hooks")
//!         .wrap(AirmyVerify::new(verifier))
//!         .route("/airmy", web::post().to(on_event))
//!         .route("/airmy/runs", web::post().to(on_run)),
//! );
//! # Ok(())
//! # }
//! ```

use std::cell::RefCell;
use std::future::poll_fn;
use std::ops::Deref;
use std::rc::Rc;

use actix_web::dev::Payload;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use airmy_verify::{Envelope, Error, Event, EventData, Verified};
use futures_util::future::{self, Either, FutureExt, LocalBoxFuture, Ready, Shared};

use crate::config::verifier_from_req;
use crate::error::AirmyError;
use crate::middleware::{open_intake, poll_read};

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

type Extract<T> =
    Either<Ready<Result<T, AirmyError>>, LocalBoxFuture<'static, Result<T, AirmyError>>>;

impl<T: EventData + 'static> FromRequest for AirmyEvent<T> {
    type Error = AirmyError;
    type Future = Extract<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        with_verified(req, payload, |verified| Ok(Self(verified.take_event()?)))
    }
}

/// The verified delivery: its raw bytes (the very bytes that were verified), its `id`, `type`
/// and `created_at`, and its event on demand ([`Verified::take_event`]). See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyDelivery(pub Verified);

impl Deref for AirmyDelivery {
    type Target = Verified;

    fn deref(&self) -> &Verified {
        &self.0
    }
}

impl FromRequest for AirmyDelivery {
    type Error = AirmyError;
    type Future = Extract<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        with_verified(req, payload, |verified| Ok(Self(verified.clone())))
    }
}

/// A verification started by the first of our extractors in a handler (without the
/// middleware), shared with the others: actix creates every extractor's future before it
/// polls any, so only the first can take the payload.
#[derive(Clone)]
struct Pending(Shared<LocalBoxFuture<'static, Result<Rc<RefCell<Verified>>, AirmyError>>>);

/// Calls `map` with the request's verified delivery: the middleware's (ready at once), the one
/// another of our extractors is verifying, or one this extractor verifies now.
fn with_verified<R: 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    map: impl FnOnce(&mut Verified) -> Result<R, AirmyError> + 'static,
) -> Extract<R> {
    if let Some(verified) = req.extensions_mut().get_mut::<Verified>() {
        return Either::Left(future::ready(map(verified)));
    }
    let pending = req.extensions().get::<Pending>().cloned();
    let pending = match pending {
        Some(pending) => pending,
        None => match verify(req, payload) {
            Ok(pending) => {
                req.extensions_mut().insert(pending.clone());
                pending
            }
            Err(err) => return Either::Left(future::ready(Err(err))),
        },
    };
    Either::Right(Box::pin(async move {
        let verified = pending.0.await?;
        let mut verified = verified.borrow_mut();
        map(&mut verified)
    }))
}

/// Starts verifying the request with the verifier in `app_data`.
fn verify(req: &HttpRequest, payload: &mut Payload) -> Result<Pending, AirmyError> {
    let verifier = verifier_from_req(req)?;
    if matches!(payload, Payload::None) && announces_body(req) {
        return Err(AirmyError::BodyAlreadyRead);
    }
    let intake = open_intake(&verifier, req.headers());
    let mut payload = payload.take();
    let read = async move {
        let mut intake = intake?;
        let read = poll_fn(|cx| poll_read(&mut payload, &mut intake, cx));
        match actix_web::rt::time::timeout(verifier.body_timeout(), read).await {
            Ok(result) => result?,
            Err(_) => return Err(Error::BodyTimeout.into()),
        }
        Ok(Rc::new(RefCell::new(intake.finish()?)))
    };
    Ok(Pending(read.boxed_local().shared()))
}

/// Whether the request's headers announce a body (so an empty payload means another extractor
/// took it).
fn announces_body(req: &HttpRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| airmy_verify::verifier::parse_content_length(v.as_bytes()))
            .is_some_and(|len| len > 0)
}
