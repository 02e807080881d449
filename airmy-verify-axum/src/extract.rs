//! Extractors that hand a handler the delivery the [`AirmyVerifyLayer`](crate::AirmyVerifyLayer)
//! verified.
//!
//! - [`AirmyEvent`] (any event, as the [`Event`] enum) and `AirmyEvent<RunCompleted>` (one
//!   event type; any [`EventData`] works).
//! - [`AirmyDelivery`]: the verified delivery itself, raw bytes included, to queue it or parse
//!   it later.
//!
//! Both read what the layer left in the request extensions: they put **no bound on the router
//! state** (any `AppState` works, with or without `#[derive(FromRef)]`), they read no body
//! (so they combine with each other and with axum's own extractors; a body extractor such as
//! `Bytes`, `String` or `Json<T>` comes last, as axum requires), and nothing is hashed or
//! parsed twice: the first
//! `AirmyEvent` of a request takes the envelope the layer parsed, a second one parses the
//! verified bytes again.
//!
//! The layer is the one way to verify: on the webhook routes (`Router::route_layer`, which
//! leaves the application's 404s alone; `Router::layer` would also answer every unknown path
//! 401), or on one route (`MethodRouter::layer`). An extractor on a route the layer does not
//! cover answers **500** `{"error":"verifier_not_configured"}` and logs why at `ERROR`: an
//! unverified body never reaches a handler.
//!
//! A typed extractor meeting another event type answers **422** with
//! `{"error":"unexpected_event_type"}`: the delivery is authentic but this route cannot process
//! it, and the 4xx shows in AIRMY's delivery history (it usually means the webhook is subscribed
//! to more types than the route handles). To decide in the handler instead, extract
//! `Result<AirmyEvent<T>, AirmyRejection>`.
//!
//! # Example: an application state of its own
//!
//! ```
//! use airmy_verify::{Secret, Verifier, event::RunCompleted};
//! use airmy_verify_axum::{AirmyDelivery, AirmyEvent, AirmyVerifyLayer};
//! use axum::{Router, extract::State, http::StatusCode, routing::post};
//!
//! #[derive(Clone)]
//! struct AppState {
//!     queue: std::sync::Arc<std::sync::Mutex<Vec<airmy_verify::Bytes>>>,
//! }
//!
//! async fn on_run(
//!     State(state): State<AppState>,
//!     AirmyEvent(run): AirmyEvent<RunCompleted>,
//!     AirmyDelivery(raw): AirmyDelivery,
//! ) -> StatusCode {
//!     println!("{} used {:?} tokens", run.id, run.data.tokens_used);
//!     state.queue.lock().unwrap().push(raw.into_bytes());
//!     StatusCode::OK
//! }
//!
//! # fn main() -> Result<(), airmy_verify::InvalidSecret> {
//! let verifier = Verifier::new(Secret::new("whsec_…")?);
//! let app: Router = Router::new()
//!     .route("/hooks/airmy/runs", post(on_run))
//!     .route_layer(AirmyVerifyLayer::new(verifier))
//!     .with_state(AppState { queue: Default::default() });
//! # Ok(())
//! # }
//! ```

use std::ops::Deref;

use airmy_verify::{Envelope, Error, Event, EventData, Verified};
use axum_core::extract::FromRequestParts;
use http::request::Parts;

use crate::rejection::AirmyRejection;

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

impl<S, T> FromRequestParts<S> for AirmyEvent<T>
where
    S: Send + Sync,
    T: EventData,
{
    type Rejection = AirmyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AirmyRejection> {
        let verified = parts
            .extensions
            .get_mut::<Verified>()
            .ok_or(AirmyRejection(Error::NotConfigured))?;
        Ok(Self(verified.take_event()?))
    }
}

/// The verified delivery: its raw bytes (the very bytes that were verified, no copy), its
/// `id`, `type` and `created_at`, and its event on demand ([`Verified::take_event`]). See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct AirmyDelivery(pub Verified);

impl Deref for AirmyDelivery {
    type Target = Verified;

    fn deref(&self) -> &Verified {
        &self.0
    }
}

impl<S> FromRequestParts<S> for AirmyDelivery
where
    S: Send + Sync,
{
    type Rejection = AirmyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AirmyRejection> {
        parts
            .extensions
            .get::<Verified>()
            .cloned()
            .map(Self)
            .ok_or(AirmyRejection(Error::NotConfigured))
    }
}
